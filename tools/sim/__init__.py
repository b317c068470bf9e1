"""Simulators: the virtual board and its service, detectors, line pacer, synthetic devices,
brokers and process helpers."""
