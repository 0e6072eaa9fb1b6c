"""What `predict` and `explain` produce: predictions per input, their JSON documents and
terminal lines, and the explanation files (overlays, arrays, sheets) behind index.json."""
