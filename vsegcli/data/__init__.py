"""Label sets and datasets (the papers' clip protocols)."""
