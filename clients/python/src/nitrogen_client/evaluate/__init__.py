"""``nitrogen-eval``: NitroGen on real games through Gymnasium (ALE, stable-retro, ViZDoom), N at once.

Needs the ``eval`` extra (``pip install 'nitrogen-client[eval]'``): gymnasium, the three backends, tqdm
and pydantic (videos use PyAV, a base dependency). Nothing here imports torch: the server does the model.
"""
