"""Runtime pieces (hooks) of ms_rcnn."""
