"""An OME-Zarr folder opens in the microarchitecture workspace like any image (File ▸ Open by its folder)."""

import numpy as np

from gui_helpers import open_in


def test_ome_zarr_opens_in_the_window(window, qtbot, tmp_path):
    import zarr

    from engine.factors.synth import demo_mosaic

    image, _ = demo_mosaic(size=256, n_cells=4, seed=2)
    root = zarr.open_group(str(tmp_path / "section.ome.zarr"), mode="w")
    root.create_dataset("0", data=image[None, None], chunks=(1, 1, 64, 64))
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
                                                               {"name": "y", "type": "space", "unit": "micrometer"},
                                                               {"name": "x", "type": "space", "unit": "micrometer"}],
                                  "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.5, 0.5]}]}]}]
    ws = open_in(window, qtbot, tmp_path / "section.ome.zarr")
    assert ws.key == "factors" and ws.image.shape == image.shape
    np.testing.assert_array_equal(ws.image, image)
