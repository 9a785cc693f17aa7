"""Pascal Context 59-class list (the 59 most frequent of the 459 labelled classes).

Data, not code. "id" is the class's value in the 459-class label maps of the Pascal Context
release (`trainval/*.mat`, variable `LabelMap`; the number before the colon in its
`labels.txt`). Ids and names were extracted with `ast` from facebookresearch/ov-seg (commit
36f49d4), `open_vocab_seg/data/datasets/register_pascal_context.py` (its 459 names and 59
names, matched by name). The order is ascending 459 id, which is the label order of
mmsegmentation's Pascal Context converter and hence of the official Segmenter checkpoints
(whose extra channel 0 is "background"); ov-seg itself lists the same 59 names in
`59_labels.txt` order instead, so its label maps are not interchangeable with ours.
"table" is the release's own name for VOC's "diningtable".
"""

# The semantic label of a class is its position in this list (0..58); 255 is ignore.
PASCAL_CONTEXT_59_CATEGORIES = [
    {"id": 2, "name": "aeroplane"},
    {"id": 9, "name": "bag"},
    {"id": 18, "name": "bed"},
    {"id": 19, "name": "bedclothes"},
    {"id": 22, "name": "bench"},
    {"id": 23, "name": "bicycle"},
    {"id": 25, "name": "bird"},
    {"id": 31, "name": "boat"},
    {"id": 33, "name": "book"},
    {"id": 34, "name": "bottle"},
    {"id": 44, "name": "building"},
    {"id": 45, "name": "bus"},
    {"id": 46, "name": "cabinet"},
    {"id": 59, "name": "car"},
    {"id": 65, "name": "cat"},
    {"id": 68, "name": "ceiling"},
    {"id": 72, "name": "chair"},
    {"id": 80, "name": "cloth"},
    {"id": 85, "name": "computer"},
    {"id": 98, "name": "cow"},
    {"id": 104, "name": "cup"},
    {"id": 105, "name": "curtain"},
    {"id": 113, "name": "dog"},
    {"id": 115, "name": "door"},
    {"id": 144, "name": "fence"},
    {"id": 158, "name": "floor"},
    {"id": 159, "name": "flower"},
    {"id": 162, "name": "food"},
    {"id": 187, "name": "grass"},
    {"id": 189, "name": "ground"},
    {"id": 207, "name": "horse"},
    {"id": 220, "name": "keyboard"},
    {"id": 232, "name": "light"},
    {"id": 258, "name": "motorbike"},
    {"id": 259, "name": "mountain"},
    {"id": 260, "name": "mouse"},
    {"id": 284, "name": "person"},
    {"id": 295, "name": "plate"},
    {"id": 296, "name": "platform"},
    {"id": 308, "name": "pottedplant"},
    {"id": 324, "name": "road"},
    {"id": 326, "name": "rock"},
    {"id": 347, "name": "sheep"},
    {"id": 349, "name": "shelves"},
    {"id": 354, "name": "sidewalk"},
    {"id": 355, "name": "sign"},
    {"id": 360, "name": "sky"},
    {"id": 366, "name": "snow"},
    {"id": 368, "name": "sofa"},
    {"id": 397, "name": "table"},
    {"id": 415, "name": "track"},
    {"id": 416, "name": "train"},
    {"id": 420, "name": "tree"},
    {"id": 424, "name": "truck"},
    {"id": 427, "name": "tvmonitor"},
    {"id": 440, "name": "wall"},
    {"id": 445, "name": "water"},
    {"id": 454, "name": "window"},
    {"id": 458, "name": "wood"},
]

# mmsegmentation's 60-class Pascal Context (the official Segmenter's): label 0 "background" is
# every pixel outside the 59 classes (unlabelled included, so id 0 here), then the 59 in order.
PASCAL_CONTEXT_60_CATEGORIES = [{"id": 0, "name": "background"}, *PASCAL_CONTEXT_59_CATEGORIES]
