"""data_synth: a deterministic, vectorised generator of synthetic medical-insurance claims.

It builds a world (patients, doctors, facilities, pharmacies, drugs, duty rosters),
simulates honest care, injects the ten fraud typologies of ``medfraud.schema.TYPOLOGIES``
with configurable prevalence, intensity, camouflage and drift, and writes a dataset in the
medfraud data contract, labels included.  See docs/generator.md.
"""

from data_synth.config import SynthConfig, TypologyConfig, load_config, valid_paths
from data_synth.generate import generate

__all__ = ["SynthConfig", "TypologyConfig", "generate", "load_config", "valid_paths"]
