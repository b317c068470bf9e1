"""Rigs for the hardware-in-the-loop suite: one interface, one file of wiring per rig."""
