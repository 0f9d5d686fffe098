"""A PyTorch flow-fusion model behind the SSD backend contract (:class:`~edge_stad.engines.protocols.SsdBackend`):
the engines' own graphs (:mod:`edge_stad.export.ssd_graphs`, uint8 frames normalised inside) run as PyTorch
modules, with the host parts (DIS flow, decoding) shared with the engines."""
import torch

from edge_stad.engines.ssd_backend import SsdGraphs
from edge_stad.export.ssd_graphs import DETECT_OUTPUTS, DetectGraph, FlowGraph
from edge_stad.torch_backends.base import TorchModelBackend


class TorchSSDBackend(TorchModelBackend, SsdGraphs):
    def __init__(self, model):
        super().__init__(model)
        self.graphs = {"detect": DetectGraph(model).to(self.device)}
        if model.config["motion"] == "flow":
            self.graphs["flow"] = FlowGraph(model).to(self.device)

    @torch.no_grad()
    def run_graph(self, name, feeds):
        out = self.graphs[name](**{k: torch.from_numpy(v).to(self.device) for k, v in feeds.items()})
        names = ("flow",) if name == "flow" else DETECT_OUTPUTS
        return {n: o.cpu().numpy() for n, o in zip(names, (out,) if name == "flow" else out)}
