"""What both sides share, torch-free: errors, defaults, the packed format, model sources, the store."""
