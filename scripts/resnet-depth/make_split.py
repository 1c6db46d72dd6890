"""A fixed train/test split of a folder of class folders, as symlinks, so both frameworks
in compare.sh train and test on the same images: python make_split.py SRC DST TRAIN TEST."""
import os, random, sys
src, dst, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for cls in sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d))):
    files = sorted(os.listdir(os.path.join(src, cls)))
    random.Random(cls).shuffle(files)
    for part, chosen in (("train", files[:n_train]), ("test", files[n_train:n_train + n_test])):
        os.makedirs(os.path.join(dst, part, cls), exist_ok=True)
        for f in chosen:
            link = os.path.join(dst, part, cls, f)
            if not os.path.exists(link):
                os.symlink(os.path.abspath(os.path.join(src, cls, f)), link)
