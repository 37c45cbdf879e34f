"""Preference data: the pairs each preference method trains on, and the incorrect CoTs they set
against the verified ones (the student's own wrong answers, the SFT checkpoint's, injected errors)."""
