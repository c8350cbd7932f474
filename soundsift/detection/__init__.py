"""Long recordings: sliding windows, per-window scores, events, and ways to export them."""
