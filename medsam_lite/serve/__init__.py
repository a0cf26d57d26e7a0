"""``medsam-lite serve``: the HTTP service (FastAPI). One inference worker owns the engine; uploads live in a
bounded store on disk; slice embeddings in a bounded LRU cache (SamPredictor's set-image-once, prompt-many).
Routers: the native API (``native.py``), samapi's (``samapi.py``, QuPath's SAM extension) and FastMedSAM's
(``fastmedsam.py``)."""
