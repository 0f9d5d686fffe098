"""The interface every 2D backbone offers to AMMA: numbered stages plus a tail."""
from torch import nn


class StagedBackbone(nn.Module):
    """A backbone cut into ``num_stages`` stages, the points where motion features can be fused.

    Subclasses set ``stage_channels`` (output channels of each stage), ``out_channels``
    (after ``tail``) and implement ``stage(i, x)``; ``tail`` is what runs after the last stage.
    """

    stage_channels = ()
    out_channels = 0

    @property
    def num_stages(self):
        return len(self.stage_channels)

    def stage(self, i, x):
        raise NotImplementedError

    def tail(self, x):
        return x

    def forward_stages(self, x):
        """Return the output of every stage, shallowest first."""
        outs = []
        for i in range(self.num_stages):
            x = self.stage(i, x)
            outs.append(x)
        return outs

    def forward(self, x):
        return self.tail(self.forward_stages(x)[-1])
