/* semalign3d: a ground-truth 3D benchmark in the SPair-71k layout (issue 5 part A). Object classes with real
 * 3D structure are rendered from cameras all around them, so every image comes with its camera, its instance
 * shape and its 3D keypoints, and the per-image inputs (features, relative depth) are built so that their
 * failure modes are those of the real ones: mirror-ambiguous features and a depth that is only relative.
 *
 *     sa3d_synth3d_params p = sa3d_synth3d_params_default(SA3D_SYNTH3D_MEDIUM);
 *     p.seed = 7;
 *     if (sa3d_synth3d_write("/tmp/s3", &p, &err)) { puts(err.msg); return 1; }
 *     // then: sa3d_dataset_open(&ds, "/tmp/s3", NULL, &err); features imported from "/tmp/s3/Features",
 *     //       depth from "/tmp/s3/Depth" (sa3d_provider_params.import_dir)
 *
 * Categories. Each is a SPair category name (so the readers, the flip map of METHOD.md 1.6 and the eval accept
 * it) whose keypoint slots are given a 3D meaning on an articulated quadruped: "dog" (16 slots) and "horse"
 * (20 slots). The shape is a chain of ellipsoid parts - body, neck, head, four legs, tail - each hung from its
 * parent at a pivot and turned about the left-right axis by a hinge angle. Object frame: x to the object's left,
 * y up, z forward (towards the head), body half-length about 1; the plane x = 0 is the plane of symmetry. The
 * slots sit on part surfaces; a slot and its flip-map partner are mirror images (part and direction mirrored).
 * An instance scales every part (mirror parts alike: 1 +- shape_variation) and draws every hinge angle
 * independently (canonical angle +- the part's range x hinge_variation), so left and right legs differ.
 *
 * Cameras. Azimuth a uniform in [0, 360) degrees, measured from the object's front (+z) towards its left
 * (+x); elevation in [elevation_min, elevation_max]; roll +- roll_max about the optical axis; a look-at camera
 * with image x right, y down, z forward (camera frame), X_cam = R X_obj + t. Pinhole with focal f in pixels
 * (f / max(W, H) uniform in [1.2, 3.0]) and principal point ((W - 1) / 2, (H - 1) / 2), so mirroring an image
 * (u -> W - 1 - u) is exactly the camera-frame reflection X -> -X. Distance and image-plane offset are set so
 * that the object's projected extent is 45-85% of the image side (max over x and y) and it stays in frame.
 *
 * Rendering. A ray through every pixel centre (u, v integer) meets the nearest part surface (an exact z-buffer
 * over the ellipsoids; depth Z = camera z). A keypoint is visible when it is in front of the camera, projects
 * into [0, W - 1] x [0, H - 1], and the nearest surface on the ray through its projection is not in front of
 * it (relative tolerance 1e-6) - except that when that surface belongs to the keypoint's own part, it may be
 * up to half that part's smallest semi-axis in front: points on a part's silhouette line (a nose, a back, a
 * paw seen from the side) count as visible, points on its far side do not. A keypoint behind another part
 * is hidden.
 *
 * Files under root:
 *   JPEGImages/<cat>/<id>.jpg          Lambert-shaded parts (one colour per part class, canonical stripes) on
 *                                      a noisy gradient background
 *   Segmentation/<cat>/<id>.png        8-bit grey, 1 object, 0 background
 *   ImageAnnotation/<cat>/<id>.json    SPair record (field order as sa3d_synth_spair_write): bndbox = the
 *                                      mask's [x_min, y_min, x_max, y_max] (inclusive pixel indices), kps "0" ..
 *                                      "29" ([round(u), round(v)] or null), pose from the azimuth ("Frontal",
 *                                      "Left", "Rear", "Right"), azimuth_id = round(a / 45) mod 8, truncated =
 *                                      the mask touches the border, occluded = difficult = 0
 *   PairAnnotation/<split>/<NNNNNN>-<src>-<trg>:<cat>.json, Layout/large/<split>.txt   as the SPair writer;
 *                                      the images of a category are split 1/2 trn, 1/6 val, the rest test
 *                                      (SPair keeps them apart); viewpoint_variation from the azimuth_id
 *                                      difference d (circular, 0..4): 0 if d = 0, 1 if d <= 2, else 2; mirror =
 *                                      one pose "Left" and the other "Right"
 *   Features/<cat>/<id>.features.safetensors   "feature_map" and "feature_map_flip" [C][g][g] float32, unit
 *                                      cells, metadata as `semalign3d features` writes (see below)
 *   Depth/<cat>/<id>.depth.safetensors "depth" [H][W] float32, disparity-like (below)
 *   GroundTruth/<cat>/<id>.json        the answer: camera (R, t, focal, principal point, azimuth, elevation,
 *                                      roll, distance), instance (part scales, hinge angles in degrees), every
 *                                      slot's 3D point in the camera frame, its exact projection and visibility
 *   synth_params.json                  every parameter and the library version, written last: its presence
 *                                      marks a complete dataset
 *
 * Features (METHOD.md 3.1 frame: GeoAware's padded square of side input_size, g x g cells). Cell (i, j) is
 * looked up at its centre ((j + 0.5), (i + 0.5)) x input_size / g, mapped to original pixels
 * (sa3d_geoaware_from_square); outside the image or when the ray misses, the cell is background: a random unit
 * vector. Otherwise, with q the hit point carried to the CANONICAL shape (same part, same ellipsoid
 * coordinates, canonical scales and hinges, divided by nothing: body half-length 1), n the surface normal in
 * the camera frame and s = (|q.x|, q.y, q.z):
 *   f = rff_A(s) + 0.5 e_class + (chirality + view_weight side) tanh(q.x / 0.08) rff_B(s)
 *       + 0.5 view_weight (n.x v_x + n.y v_y + n.z v_z) + noise of norm feature_noise,   normalised,
 * rff_* = sqrt(2 / C) cos(W s + b) random Fourier features (rows of W normal with spread feature_frequency,
 * so points 0.1 apart correlate about exp(-(0.1 feature_frequency)^2 / 2)), e_class a unit code of the part
 * class (left and right legs share one), v_* fixed unit vectors, side = -R[2][0] in [-1, 1] (how much the
 * object's left faces the camera). Left and right twins differ only by the third term: its sign tells them
 * apart only while chirality > view_weight |side|; beyond that the term says "near side" rather than "left",
 * so a left point seen from the left matches the right twin seen from the right - the mirror confusion of
 * real features under large viewpoint change. The normal term adds view-dependent appearance.
 * feature_map_flip is the map of the mirrored image: each cell looks up the mirrored pixel (W - 1 - u, v) and
 * uses q.x -> -q.x, n.x -> -n.x, i.e. the features of the mirrored scene (sa3d_synth3d_scene_mirror), with its
 * own noise; its background cells are fresh random vectors.
 *
 * Depth (METHOD.md 3.2): at object pixels r = (1/Z - 1/z_far) / (1/z_near - 1/z_far) clamped to [0, 1]
 * (z_near, z_far: camera distance -+ 1.6 x instance size), then a r^gamma + b with per-image gamma in
 * [1 - depth_distortion, 1 + depth_distortion], a in [0.5, 2], b in [0, 0.5], plus normal noise of
 * depth_noise x a; background pixels 0.7 b plus the same noise. Larger = nearer, as Depth Anything.
 *
 * Difficulty presets (sa3d_synth3d_params_default):   easy    medium   hard
 *   feature_noise                                      0.15    0.30     0.45
 *   chirality                                          0.60    0.20     0.10
 *   view_weight                                        0.25    0.70     0.90
 *   shape_variation / hinge_variation                  0.05/0.5 0.10/1   0.15/1.5
 *   elevation range (degrees), roll_max                0..30,0 -15..45,5 -30..60,15
 *   depth_noise / depth_distortion                     0.01/0.1 0.02/0.25 0.04/0.4
 *
 * Determinism: every quantity comes from explicit per-item random streams of `seed` (splitmix64 seeding
 * xoshiro256**), independent of n_threads, so equal parameters give byte-identical files (same build and
 * libjpeg). Thread safety: no shared state; OpenMP over images and pairs with n_threads threads
 * (sa3d_set_threads, process-wide). */
#ifndef SEMALIGN3D_SYNTH3D_H
#define SEMALIGN3D_SYNTH3D_H

#include <stdint.h>
#include "semalign3d/providers.h"
#include "semalign3d/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SA3D_SYNTH3D_N_CATEGORIES 2    /* "dog", "horse" */
#define SA3D_SYNTH3D_MAX_PARTS 8
#define SA3D_SYNTH3D_MAX_SLOTS 30      /* SPair records carry keys "0".."29" */

typedef enum sa3d_synth3d_difficulty { SA3D_SYNTH3D_EASY, SA3D_SYNTH3D_MEDIUM, SA3D_SYNTH3D_HARD } sa3d_synth3d_difficulty;

typedef struct sa3d_synth3d_params {
    uint64_t seed;               /* 0 */
    int difficulty;              /* the preset the noise fields came from (recorded only) */
    int n_categories;            /* 1: the first n of "dog", "horse"; 1..SA3D_SYNTH3D_N_CATEGORIES */
    int images_per_category;     /* 60; 12..1000 */
    int pairs_trn, pairs_val, pairs_test;   /* 150, 30, 200 over all categories; 0..999999 */
    int min_side, max_side;      /* 192, 256: image width and height in pixels, 64..2048 */
    int feature_channels;        /* C: 64; 4..4096 */
    int feature_grid;            /* g: 60; 4..512 */
    int input_size;              /* 840; g..16384 */
    float feature_noise;         /* preset; 0..10 */
    float chirality;             /* preset; 0..10 */
    float view_weight;           /* preset; 0..10 */
    float feature_frequency;     /* 6; 0.1..100 (per body half-length) */
    float shape_variation;       /* preset; 0..0.5 */
    float hinge_variation;       /* preset; 0..3 */
    float elevation_min, elevation_max;   /* preset, degrees; -89..89, min <= max */
    float roll_max;              /* preset, degrees; 0..90 */
    float depth_noise;           /* preset; 0..1 */
    float depth_distortion;      /* preset; 0..0.9 */
    int n_threads;               /* 0 = all cores */
    int (*cancel)(void *user);   /* NULL, or polled before each file, from several threads at once: non-zero
                                    stops the write (SA3D_ERR_CANCELLED) and nothing is left under root */
    void *cancel_user;
} sa3d_synth3d_params;

/* Defaults with the preset of `difficulty` (an out-of-range value gives MEDIUM). */
SA3D_API sa3d_synth3d_params sa3d_synth3d_params_default(int difficulty);
/* "easy", "medium", "hard" -> 0, 1, 2; -1 for anything else (NULL included). */
SA3D_API int sa3d_synth3d_difficulty_parse(const char *name);
/* Category i's SPair name, or NULL outside [0, SA3D_SYNTH3D_N_CATEGORIES). */
SA3D_API const char *sa3d_synth3d_category(int i);

/* Writes the dataset under root, which must not exist (it is created, with its parents) or be an empty
 * directory. Parameters and root are checked before anything is created. The whole dataset is written into
 * root/.partial-XXXXXX and moved up into root at the end, so it appears whole or not at all. Failure:
 * SA3D_ERR_ARG (a parameter out of range, naming it; root not empty), SA3D_ERR_IO (naming the file),
 * SA3D_ERR_NOMEM, SA3D_ERR_CANCELLED (p->cancel); the staging folder is then removed. */
SA3D_API sa3d_status sa3d_synth3d_write(const char *root, const sa3d_synth3d_params *p, sa3d_error *err);

/* The providers of a dataset written by sa3d_synth3d_write and opened as ds from root: features and depth
 * imported from root/Features and root/Depth, masks from Segmentation/. On failure all three are NULL. Release
 * each with sa3d_provider_free. */
SA3D_API sa3d_status sa3d_synth3d_providers(sa3d_dataset *ds, const char *root, sa3d_provider **features,
                                            sa3d_provider **depth, sa3d_provider **masks, sa3d_error *err);

/* The content of synth_params.json for p (one line). malloc'd (free with free()); NULL when out of memory. */
SA3D_API char *sa3d_synth3d_params_json(const sa3d_synth3d_params *p);

/* ---- the ground truth of one image, for tests and tools ---------------------------------------------------- */

typedef struct sa3d_synth3d_scene {
    int category;                              /* index, see sa3d_synth3d_category */
    int width, height;                         /* pixels */
    double focal, cx, cy;                      /* pixels; cx = (W - 1) / 2, cy = (H - 1) / 2 */
    double R[3][3], t[3];                      /* X_cam = R X_obj + t */
    double azimuth, elevation, roll, distance; /* degrees; distance in object units (camera centre to origin) */
    double size;                               /* overall instance scale (multiplies every part) */
    double scale[SA3D_SYNTH3D_MAX_PARTS];      /* per-part scale (mirror parts equal) */
    double hinge[SA3D_SYNTH3D_MAX_PARTS];      /* per-part hinge angle, degrees */
} sa3d_synth3d_scene;

/* The scene of image `index` (0-based over all categories, category = index / images_per_category) exactly as
 * sa3d_synth3d_write renders it (its id is "synth3d_%06d" of index + 1). Fails with SA3D_ERR_ARG on bad
 * parameters or index. Thread-safe. */
SA3D_API sa3d_status sa3d_synth3d_scene_of(const sa3d_synth3d_params *p, int index, sa3d_synth3d_scene *out,
                                           sa3d_error *err);
/* A canonical instance (scales 1, canonical hinges, size 1) of category seen from a look-at camera at
 * (azimuth, elevation) degrees, no roll, at `distance`, focal in pixels, image W x H. */
SA3D_API void sa3d_synth3d_scene_canonical(int category, double azimuth, double elevation, double distance,
                                           double focal, int width, int height, sa3d_synth3d_scene *out);
/* The mirrored scene: the object reflected through its symmetry plane (mirror parts swap scales and hinges)
 * seen by the reflected camera (R' = M R M, t' = M t, M = diag(-1, 1, 1)): its image is the left-right mirror
 * of in's, pixel (u, v) -> (W - 1 - u, v), and slot k there is slot flip(k) here. */
SA3D_API void sa3d_synth3d_scene_mirror(const sa3d_synth3d_scene *in, sa3d_synth3d_scene *out);

/* Keypoint slots of the scene's category: for k < returned count, cam[k] = 3D point in the camera frame,
 * uv[k] = its exact projection (pixels), vis[k] = visible per the rule above. Any output may be NULL. */
SA3D_API int sa3d_synth3d_keypoints(const sa3d_synth3d_scene *s, double (*cam)[3], double (*uv)[2],
                                    unsigned char *vis);
/* Ray through pixel (u, v) (continuous pixel coordinates): returns the camera depth Z of the nearest surface
 * and its part index (>= 0), or -1 (miss; *depth untouched). */
SA3D_API int sa3d_synth3d_raycast(const sa3d_synth3d_scene *s, double u, double v, double *depth);
/* F[C][g][g] = the feature map of the scene as the writer builds it (flip = 0: the image; 1: its mirror),
 * with noise and background drawn from stream `noise_stream` of p->seed. Needs C * g * g floats. Thread-safe. */
SA3D_API sa3d_status sa3d_synth3d_feature_map(const sa3d_synth3d_params *p, const sa3d_synth3d_scene *s, int flip,
                                              uint64_t noise_stream, float *F, sa3d_error *err);

#ifdef __cplusplus
}
#endif
#endif
