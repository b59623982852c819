"""Training: the per-worker loop (plain torch), its contexts (local and Ray Train), and the rules."""
