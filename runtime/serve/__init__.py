"""``python -m runtime.serve``: the voice as a Wyoming text-to-speech server (Home Assistant, wyoming clients).

Needs the ``server`` extra (``pip install 'vits-edge[server]'``: the ``wyoming`` package); ``zeroconf`` adds
discovery. catalog.py: the voices offered; engine.py: loaded voices and fair workers; protocol.py: bounded
reading of events; server.py: the connections.
"""
