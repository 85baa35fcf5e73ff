"""Print the XLA flags and JAX environment of a platform profile (partitioning/xla_profiles.py).

    eval "$(python -m tools.xla_flags gpu)"      # then start tools.train / tools.bench

Flags the user already put in XLA_FLAGS win over the profile's value for the same flag;
other variables are only set where unset.
"""

from __future__ import annotations

import shlex
import sys

from tools import cli  # first: the quiet start and the log lines
from partitioning.xla_profiles import PROFILES, environment, unknown_flags


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("profile", choices=sorted(PROFILES))
    p.add_argument("--check", action="store_true",
                   help="exit 1, naming them, if the installed jaxlib lacks any flag")
    args = p.parse_args(argv)
    env = environment(args.profile)
    if args.check:
        bad = unknown_flags(env.get("XLA_FLAGS", ""))
        if bad:
            sys.exit(f"this jaxlib does not know XLA flag(s) {bad}; remove them from "
                     f"XLA_FLAGS or partitioning/xla_profiles.py")
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
