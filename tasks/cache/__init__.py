"""Task caches: a task's converted examples written offline (Beam) and read by batch index."""
