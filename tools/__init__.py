"""The gasguard command line: installers, testers and regulators."""
