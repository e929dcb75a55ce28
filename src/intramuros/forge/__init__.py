"""Forge: fine-tune open models on a tenant's own data, inside the walls.

A workload plug-in (``plugin.py``): the jobs API (``routes.py``, ``service.py``),
the data check (``data.py``), the queue in the database (``jobs.py``,
``tables.py``), the training worker process (``worker.py``, ``train.py``) and
the llama.cpp adapter it exports (``export.py``). Training needs the ``forge``
extra (PyTorch, transformers, PEFT), imported only by the worker.
"""
