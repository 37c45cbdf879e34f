"""Training the student: SFT on the verified set, then CogPO (DPO with a per-pair beta) on TRL."""
