"""Virtual machines: definitions, state sync, workflows, long operations, thumbnails."""
