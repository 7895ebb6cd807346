"""Detector families; importing this package registers every family."""
