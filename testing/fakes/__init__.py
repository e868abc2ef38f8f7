"""Local HTTP servers that act as the outside world: the image and video providers, frame hosts, webhook receivers."""
