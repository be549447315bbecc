"""The model stage: load a Keras model, trace it with `tf.function`, audit its scalars.

Also the serializable scalar layers (`layers.py`) that the correct recipes use.
"""
