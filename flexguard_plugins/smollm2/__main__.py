"""`python -m flexguard_plugins.smollm2`: build flexguard-smollm2 (once) and print its folder, e.g. for
`vllm serve "$(python -m flexguard_plugins.smollm2)" --served-model-name flexguard-smollm2`."""

from . import build

print(build())
