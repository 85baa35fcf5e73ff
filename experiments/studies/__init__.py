"""The registered studies (experiments/study_run.py): `python -m tools.study --study=NAME`."""

from fields.choices import require_choice
from experiments.study_run import Study
from experiments.studies import precision
from experiments.studies import scaling
from experiments.studies import switch_vs_dense
from experiments.studies import treednn

STUDIES = {s.name: s for s in (
    Study("switch_vs_dense", "studies/switch_vs_dense.gin", switch_vs_dense.analyse,
          switch_vs_dense.plot, "FLOP-matched Switch vs dense T5: speedup to the dense loss"),
    Study("scaling", "studies/scaling.gin", scaling.analyse, scaling.plot,
          "loss against training FLOPs and parameters per architecture, power-law fits"),
    Study("precision", "studies/precision.gin", precision.analyse, precision.plot,
          "fp32 vs bf16 vs fp16 with dynamic loss scaling"),
    Study("treednn", "studies/treednn.gin", treednn.analyse, treednn.plot,
          "TreeDNN trees vs separate models vs a shared model on three datasets"),
)}


def lookup(name: str) -> Study:
    require_choice("", "--study", name, STUDIES)
    return STUDIES[name]
