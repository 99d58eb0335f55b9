"""A pose-transfer dataset from videos of people (``emca data from-video``).

Every ``every``-th frame of each video goes through five steps:

1. **Detect** people: OpenCV's HOG people detector by default (:func:`hog_people_detector`), or any
   :data:`PersonDetector` (a function from an RGB frame to :class:`People`).
2. **Track** them into identities with ByteTrack (``supervision``). A tracker can swap two people, so a track is
   cut into a new identity wherever it jumps: its box centre moves further than a person walks in the time
   elapsed or its height changes by more than ``max_size_change`` times between two frames
   (:class:`IdentitySplitter`), or a crop's clothing colours (:func:`body_colours`: the mean CIE Lab colour of
   the torso and of the thighs, placed by the crop's pose) differ by more than ``max_colour_distance`` (delta E)
   from the running colours of the identity's kept crops on two candidate crops in a row (a single such crop is
   rejected as an outlier: an odd view, such as an arm across the torso, changes the colours too).
3. **Crop** each person to the preset's aspect ratio with ``margin`` around the box and resize it to the preset
   (market 128x64, deepfashion 256x176, or HxW); MediaPipe Pose (``emca.pose``) finds the 18 COCO keypoints on
   a copy upscaled to at least 256 rows.
4. **Reject** crops, counting each cause (first that applies, in this order): cut off by the frame edge,
   overlapping another person (box IoU above ``max_overlap``), too small for the preset (more than
   ``max_upscale`` times upscaling), not followed by the tracker, fewer than ``min_gap`` frames after the
   identity's previous crop, no pose or several people (MediaPipe), low keypoint confidence (mean over the 12
   limb joints below ``min_keypoint_confidence``), a missing hip or shoulder (the PATN pairs rule), a pose off the
   crop's centre (:func:`off_centre`), colours unlike the identity's (see 2). Joints below
   ``min_keypoint_confidence`` are written as missing (-1).
5. **Pair and split**: all ordered pairs of one identity's crops whose poses differ by more than
   ``min_pose_difference`` (mean distance of the joints both show, in units of the crop height); identities with
   fewer than two crops or no such pair are dropped. Train and test are split by identity (the default: no
   identity in both, though a person who leaves and comes back is a new identity) or by time within each
   identity (its last crops are its test crops).

Written under ROOT: the PATN layout of the preset (``train/``, ``test/``, the annotation and pairs CSVs; an HxW
preset uses Market's file names), ``report.json``, ``report.md`` and ``contact_sheet.png`` (a row of crops per
identity). Everything goes into a hidden folder beside ROOT first, each file written atomically, and the folder
is renamed into place at the end, so a failed run leaves no half-made dataset. OpenCV, MediaPipe and supervision
come with ``pip install 'emca[pose]'`` and are imported only when a video is processed.

The package, from the bottom up (each module imports only ones listed before it): ``options`` (the preset
target, FromVideoOptions, the optional imports), ``detect`` (people and keypoint detectors), ``track`` (ByteTrack
and identity splitting), ``crops`` (crop windows, rejection causes), ``collect`` (reading videos into kept crops),
``layout`` (pairs, split, the PATN files, report, contact sheet) and ``build`` (:func:`build_from_videos`).
"""

from __future__ import annotations

from emca.data.video.build import build_from_videos
from emca.data.video.crops import pose_difference
from emca.data.video.detect import CropSource, MediaPipeKeypoints, People, ScoredPose, box_iou, hog_people_detector
from emca.data.video.options import FromVideoOptions, parse_preset
from emca.data.video.track import IdentitySplitter

__all__ = [
    "CropSource",
    "FromVideoOptions",
    "IdentitySplitter",
    "MediaPipeKeypoints",
    "People",
    "ScoredPose",
    "box_iou",
    "build_from_videos",
    "hog_people_detector",
    "parse_preset",
    "pose_difference",
]
