"""Monitoring: drift checks, traffic simulation."""
