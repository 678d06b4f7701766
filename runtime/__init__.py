"""vits-edge runtime: text -> audio with onnxruntime and numpy (the device side)."""

import os

# onnxruntime's Linux builds (1.29 and later) collect telemetry by default: at its first session a thread starts,
# a device id and an event database are written under ~/.cache/Microsoft, and events are uploaded when a network
# is there. A voice that runs offline on a device does none of that: it is switched off here, before anything
# imports onnxruntime (ORT_DISABLE_TELEMETRY=1 is its full opt-out, read once at start). Set the variable
# yourself (to 0) to keep onnxruntime's default. Importing onnxruntime before vits-edge bypasses this.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
