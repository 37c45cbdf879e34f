"""Where a profile's model is, built or converted first if it has to be:
``python -m crv_dagster.models PROFILE MODEL`` prints the path (or Hub id) ``from_pretrained`` takes."""

import argparse

from crv_dagster.config import load_profile_file, profile_path
from crv_dagster.models.located import resolve_profile_model


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m crv_dagster.models", description=__doc__)
    parser.add_argument("profile", help="a profile name (assets_config/NAME.yaml) or a path to one")
    parser.add_argument("model", help="a key of the profile's `models`")
    args = parser.parse_args()
    profile = load_profile_file(args.profile if args.profile.endswith((".yaml", ".yml")) else profile_path(args.profile))
    if args.model not in profile.models:
        parser.error(f"profile '{profile.name}' has no model '{args.model}' (has: {sorted(profile.models)})")
    print(resolve_profile_model(profile, args.model))


if __name__ == "__main__":
    main()
