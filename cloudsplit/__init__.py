"""Split execution and distributed training between devices and a datacenter (not built yet)."""
