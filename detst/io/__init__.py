"""I/O at the edges: COCO and YOLO files, images, atomic writes."""
