"""Reading and writing images, videos and output folders (no ML imports here)."""
