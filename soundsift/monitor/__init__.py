"""Live listening: audio sources, the N-of-M alert gate, and alert sinks."""
