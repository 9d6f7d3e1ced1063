"""File devices that fail on cue: an fsync returning EIO, as a dying disk does."""

from __future__ import annotations

import errno

from storage.device import FileDevice


class FsyncSwitch:
    """`switch.device` is a device factory whose fsync fails while `switch.failing`."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        switch = self

        class FlakyDevice(FileDevice):
            def sync(self) -> None:
                if switch.failing:
                    raise OSError(errno.EIO, "injected fsync failure")
                super().sync()

        self.device = FlakyDevice
