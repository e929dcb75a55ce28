"""Wire types of the HTTP API, apart from any serving code: the bottom layer.

``openai`` holds the model API (OpenAI's shapes, Mistral's spellings),
``admin`` the administration API; ``base`` their base classes. Workloads keep
their own wire types beside them, on the same base classes.
"""
