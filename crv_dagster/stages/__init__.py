"""The logic of each asset, one plain module per asset, named as the asset (``stages/base.py``
says what a stage module holds). Nothing under this package imports Dagster or the Dagster layer."""
