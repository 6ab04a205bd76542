//! The four files of MNIST and the published facts that verify them.

/// One of the four original MNIST IDX files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MnistFile {
    TrainImages,
    TrainLabels,
    TestImages,
    TestLabels,
}

impl MnistFile {
    /// All four, in the order a full load reads them.
    pub const ALL: [MnistFile; 4] = [
        MnistFile::TrainImages,
        MnistFile::TrainLabels,
        MnistFile::TestImages,
        MnistFile::TestLabels,
    ];

    /// The canonical (decompressed) file name; mirrors serve it with a `.gz` suffix.
    pub fn file_name(self) -> &'static str {
        match self {
            MnistFile::TrainImages => "train-images-idx3-ubyte",
            MnistFile::TrainLabels => "train-labels-idx1-ubyte",
            MnistFile::TestImages => "t10k-images-idx3-ubyte",
            MnistFile::TestLabels => "t10k-labels-idx1-ubyte",
        }
    }

    /// Size of the decompressed IDX file in bytes.
    pub fn decompressed_len(self) -> u64 {
        match self {
            MnistFile::TrainImages => 47_040_016,
            MnistFile::TrainLabels => 60_008,
            MnistFile::TestImages => 7_840_016,
            MnistFile::TestLabels => 10_008,
        }
    }

    /// Published SHA-256 of the decompressed IDX bytes. Verifying the decompressed bytes
    /// (not the .gz) accepts any faithful mirror or re-compression and nothing else.
    pub fn sha256(self) -> &'static str {
        match self {
            MnistFile::TrainImages => {
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            }
            MnistFile::TrainLabels => {
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            }
            MnistFile::TestImages => {
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            }
            MnistFile::TestLabels => {
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            }
        }
    }

    /// Whether this file holds images (IDX3) rather than labels (IDX1).
    pub fn is_images(self) -> bool {
        matches!(self, MnistFile::TrainImages | MnistFile::TestImages)
    }
}

/// Published class counts (digits 0..=9) of the training set.
pub const TRAIN_CLASS_COUNTS: [usize; 10] =
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
/// Published class counts (digits 0..=9) of the test set.
pub const TEST_CLASS_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

/// Side length of an MNIST image.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per MNIST image (28 x 28).
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes.
pub const NUM_CLASSES: usize = 10;
