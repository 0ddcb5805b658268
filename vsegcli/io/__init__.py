"""Files and streams: video probe/read/write, atomic file writes, host-memory tuning."""
