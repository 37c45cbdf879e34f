"""The CRV agents (Critic, Rethinker, Verifier): plain Python over a chat backend, no Dagster."""
