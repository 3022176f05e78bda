"""Units of traffic. Bytes are integers everywhere; for display, 1 MB = 1024 KB = 1,048,576
bytes, as Chinese carriers bill."""

from __future__ import annotations

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
