"""The assets of each stage, and what each asset declares it reads (``ASSET_READS``)."""

from crv_dagster.orchestration.assets import crv, data, evaluation, training

ASSET_READS = {**data.READS, **crv.READS, **training.READS, **evaluation.READS}
