"""What a GPU worker's disks hold, and so how large they are by default.

Root: the Deep Learning AMI's own snapshot size (`gpuRootVolumeGiB` 0). The
launch template then names no size and EC2 takes the snapshot's, so a new AMI
release never changes the template. Nothing large is written there: models and
container images live on the model volume (userdata/model-volume.sh).

Model volume (`modelVolumeGiB`): the smallest round size that holds two
8B-class models, the default model and every container image the worker pulls,
above k3s's eviction floor. The sizes are cited figures or marked estimates;
`needed_gib` is the arithmetic, checked against the default by
tests/aws/test_disks.py.
"""

from __future__ import annotations

from dataclasses import dataclass

GB_PER_GIB = 1024 ** 3 / 1e9

# The root snapshot of the Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu
# 22.04). AWS's release notes give no size; 75 GiB is what every public account
# of it reports (a `df` of release 20250505 shows a 73G root with 24G free:
# github.com/tekumara/notes aws-deeplearning-ami.md), and RunInstances refuses a
# smaller root. Used for the offline estimate; at `up` EC2 uses the real one.
DLAMI_ROOT_SNAPSHOT_GIB = 75

# k3s starts its kubelet with eviction-hard imagefs.available<5% (k3s
# pkg/daemons/agent, the kubelet args map). Container images live on the model
# volume, so the models count against that floor too.
KUBELET_IMAGEFS_FLOOR = 0.05
# mkfs.ext4 defaults: a 256-byte inode per 16 KiB, a 128 MiB journal at these
# sizes; no reserved blocks (-m 0, userdata/model-volume.sh).
EXT4_INODE_SHARE = 256 / 16384
EXT4_JOURNAL_GIB = 0.125


@dataclass(frozen=True)
class Content:
    name: str
    gb: float            # decimal GB, as `ollama list` and `docker images` print
    source: str


MODEL_VOLUME_CONTENTS = (
    Content("llama3.1:8b (Q4_K_M)", 4.9, "`ollama list`, model 46e0c10c039e"),
    Content("qwen3:8b (Q4_K_M)", 5.2, "`ollama list`, model 500a1f067a9f"),
    Content("llama3.2:3b, the default `models` entry", 2.0, "`ollama list`, model a80c4f17acd5"),
    Content("ollama/ollama image, unpacked", 4.87, "`docker images`, ollama/ollama issue 7184"),
    Content("ollama/ollama image, compressed layers (containerd keeps both)", 3.3,
            "a 3.0 GiB CUDA layer, ollama/ollama issue 18127; containerd's discard_unpacked_layers is off in k3s"),
    Content("Liqo, NVIDIA device plugin and k3s system images, both copies", 2.0, "estimate, not measured"),
)


def usable_gib(volume_gib: float) -> float:
    """What the pods may fill before the kubelet evicts: the volume less ext4's
    metadata and k3s's imagefs floor."""
    return volume_gib * (1 - EXT4_INODE_SHARE - KUBELET_IMAGEFS_FLOOR) - EXT4_JOURNAL_GIB


def contents_gib(contents=MODEL_VOLUME_CONTENTS) -> float:
    return sum(c.gb for c in contents) / GB_PER_GIB


def needed_gib(contents=MODEL_VOLUME_CONTENTS) -> float:
    """The smallest volume whose `usable_gib` holds `contents`."""
    return (contents_gib(contents) + EXT4_JOURNAL_GIB) / (1 - EXT4_INODE_SHARE - KUBELET_IMAGEFS_FLOOR)
