/* SA3D_HD marks a function written once for the CPU and the GPU: static inline C that nvcc also compiles as
 * device code (__host__ __device__). The math of the aligner's energy (align/align_energy.h) and of L_geom's
 * relations (geom/geom.h) is written this way, so that the CUDA backend runs the lines the CPU tests check. */
#ifndef SA3D_HD_H
#define SA3D_HD_H

#ifdef __CUDACC__
#define SA3D_HD static inline __host__ __device__
#else
#define SA3D_HD static inline
#endif

#endif
