"""A trained network put to use: loaded from its checkpoint, fed people's images as the data set was made, judged on
a split, exported."""
