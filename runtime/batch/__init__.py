"""Batch synthesis of a whole corpus (``python -m runtime.batch``). ``jobs`` holds what any way of running it shares
(items, plan, manifest, errors, the synthesis of one item); ``local`` runs it on this machine's processes."""
