"""What every colorization network here shares: the reference's BaseColor normalisation (richzhang/colorization,
colorizers/base_color.py: L in as (L - 50) / 100, ab as ab / 110) and the registry the networks add themselves to.

Its own module so that the network modules (trainer.models: eccv16, tiny; trainer.siggraph17) both import it and
neither imports the other's module for it; trainer.models.create_model sees every registered network.
"""
from pipeline.registry import Registry

L_CENT, L_NORM, AB_NORM = 50.0, 100.0, 110.0     # BaseColor constants of the released models
MODELS = Registry("model")
