"""A Raspberry Pi from the build machine: emulation (``emulation``), what the Pi's core executes counted under it
(``counts``, with the QEMU plugin ``insnclass.c``), the core models that turn counts into an emulation estimate of
time (``cost``), and the calibrated estimates that ``quantize --target pi4|pi5`` plans by (``estimate``)."""
