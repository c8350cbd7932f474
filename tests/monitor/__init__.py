"""Helpers of the monitor's tests: a real mosquitto broker and an MQTT client that records what it hears."""
