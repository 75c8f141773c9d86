"""How one machine runs the models: decided once, recorded in the run's report, passed to model loading."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ComputePrecision = Literal["fp32", "bf16", "fp16"]


class MachinePlan(BaseModel):
    """The device, precision, thread counts and detector batch a machine runs the models with.

    Made by `components.models.devices.decide_machine` from what a run asked for (`auto` or a
    value) and the machine itself, once per process that runs models: the flow's, or each Ray or
    Dask worker's. Everything below it (model loading, the chunk stages) takes these values as
    they are and decides nothing again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(description="cpu, cuda, cuda:N or mps: never auto")
    precision: ComputePrecision = Field(description="what the models compute in: never auto")
    torch_threads: int = Field(ge=1, description="PyTorch's threads for the forward passes")
    decode_threads: int = Field(ge=1, description="threads that decode, cut and read pictures beside the models")
    detect_batch_size: int = Field(ge=1, description="images per detector forward pass")
    cpu: str = Field(description="the CPU and the instruction sets that decide bf16 (CpuFeatures.describe)")

    def describe(self) -> str:
        """One line for a report: 'cpu, bf16, 2 torch threads, 2 decode threads, detector batch 1, on <CPU>'."""
        return (
            f"{self.device}, {self.precision}, {self.torch_threads} torch threads, {self.decode_threads} decode "
            f"threads, detector batch {self.detect_batch_size}, on {self.cpu}"
        )
