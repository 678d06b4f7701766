"""The runtime and every int8 preset, run on an emulated Raspberry Pi 4 and 5 (``make arm-check``).

``emulation``: can this machine run aarch64 code (QEMU user mode, binfmt_misc, root), and the
cached Debian bookworm root filesystem it runs in. ``check``: the models, the runs, the comparison.
"""
