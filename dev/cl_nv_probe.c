/* Whether NVIDIA's OpenCL reaches ldmatrix and cp.async (issue 12): both need a .shared address, and in
 * OpenCL C all we have is a __local pointer cast to an integer. One warp fills a local tile, loads a 16 x 16
 * tile of 16-bit elements with ldmatrix.x4 from the cast addresses, and copies 16 bytes per lane with
 * cp.async; the host compares both with what the PTX ISA says they return. Prints one line per instruction:
 * "ok", "mismatch" (the cast is not a .shared address) or the build log's head.
 *
 * Build and run on the GPU machine (source .device-deps/activate first; no library needed):
 *   gcc -std=c11 -O2 dev/cl_nv_probe.c -o /tmp/cl_nv_probe -lOpenCL && /tmp/cl_nv_probe */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <string.h>

static const char *source =
    "__kernel void probe_ldmatrix(__global const uint *src, __global uint *out) {\n"
    "  __local uint tile[16 * 8];\n"
    "  const int lid = get_local_id(0);\n"
    "  for (int i = lid; i < 128; i += 32) tile[i] = src[i];\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  uint a = (uint)(size_t)(tile + (lid & 15) * 8 + (lid >> 4) * 4), r0, r1, r2, r3;\n"
    "  __asm__ __volatile__(\"ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\"\n"
    "                       : \"=r\"(r0), \"=r\"(r1), \"=r\"(r2), \"=r\"(r3) : \"r\"(a));\n"
    "  out[lid * 4] = r0, out[lid * 4 + 1] = r1, out[lid * 4 + 2] = r2, out[lid * 4 + 3] = r3;\n"
    "}\n"
    "__kernel void probe_cp_async(__global const uint *src, __global uint *out) {\n"
    "  __local uint4 tile[32];\n"
    "  const int lid = get_local_id(0);\n"
    "  tile[lid] = (uint4)(0u);\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  uint a = (uint)(size_t)(tile + (lid ^ 1));\n"
    "  __asm__ __volatile__(\"cp.async.cg.shared.global [%0], [%1], 16;\" : : \"r\"(a), \"l\"(src + lid * 4));\n"
    "  __asm__ __volatile__(\"cp.async.commit_group;\");\n"
    "  __asm__ __volatile__(\"cp.async.wait_all;\" : : : \"memory\");\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  vstore4(tile[lid], lid, out);\n"
    "}\n";

/* Runs one probe kernel over 32 work-items; 0 on success, with out[] filled. */
static int run(cl_context ctx, cl_command_queue q, cl_program prog, const char *name, cl_mem src, cl_mem dst,
               cl_uint *out) {
  cl_int err;
  cl_kernel k = clCreateKernel(prog, name, &err);
  if (err != CL_SUCCESS) return printf("%s: clCreateKernel: %d\n", name, err), 1;
  clSetKernelArg(k, 0, sizeof src, &src);
  clSetKernelArg(k, 1, sizeof dst, &dst);
  size_t global = 32, local = 32;
  err = clEnqueueNDRangeKernel(q, k, 1, NULL, &global, &local, 0, NULL, NULL);
  if (err == CL_SUCCESS) err = clEnqueueReadBuffer(q, dst, CL_TRUE, 0, 128 * sizeof(cl_uint), out, 0, NULL, NULL);
  clReleaseKernel(k);
  (void)ctx;
  if (err != CL_SUCCESS) return printf("%s: launch or read: %d\n", name, err), 1;
  return 0;
}

int main(void) {
  cl_platform_id plats[8];
  cl_uint np = 0;
  clGetPlatformIDs(8, plats, &np);
  cl_device_id dev = NULL;
  for (cl_uint i = 0; i < np && !dev; i++) {
    char name[256] = "";
    clGetPlatformInfo(plats[i], CL_PLATFORM_NAME, sizeof name, name, NULL);
    if (strstr(name, "NVIDIA")) clGetDeviceIDs(plats[i], CL_DEVICE_TYPE_GPU, 1, &dev, NULL);
  }
  if (!dev) return puts("no NVIDIA OpenCL device"), 1;
  cl_int err;
  cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &err);
  cl_program prog = clCreateProgramWithSource(ctx, 1, &source, NULL, &err);
  if (clBuildProgram(prog, 1, &dev, "", NULL, NULL) != CL_SUCCESS) {
    char log[2000] = "";
    clGetProgramBuildInfo(prog, dev, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
    printf("build failed: %.1500s\n", log);
    return 1;
  }
  cl_uint in[128], out[128];
  for (int i = 0; i < 128; i++) in[i] = 0x10001u * (cl_uint)i + 0x01000000u * (cl_uint)(i & 7);
  cl_mem src = clCreateBuffer(ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof in, in, &err);
  cl_mem dst = clCreateBuffer(ctx, CL_MEM_WRITE_ONLY, sizeof out, NULL, &err);

  /* ldmatrix.x4: lanes 8 i .. 8 i + 7 address the rows of matrix i (rows 8 (i & 1).., 16-bit columns
   * 8 (i >> 1)..); register i of lane l holds row l / 4 of matrix i, columns 2 (l % 4), + 1: one 32-bit word. */
  if (!run(ctx, q, prog, "probe_ldmatrix", src, dst, out)) {
    int bad = 0;
    for (int l = 0; l < 32; l++)
      for (int i = 0; i < 4; i++) bad += out[l * 4 + i] != in[(8 * (i & 1) + l / 4) * 8 + (i >> 1) * 4 + l % 4];
    printf("ldmatrix from a __local pointer cast to uint: %s (%d of 128 words wrong)\n", bad ? "mismatch" : "ok", bad);
  }
  /* cp.async: lane l copies 16 bytes of src (words 4 l ..) into local vector l ^ 1. */
  if (!run(ctx, q, prog, "probe_cp_async", src, dst, out)) {
    int bad = 0;
    for (int l = 0; l < 32; l++)
      for (int j = 0; j < 4; j++) bad += out[l * 4 + j] != in[(l ^ 1) * 4 + j];
    printf("cp.async into a __local pointer cast to uint: %s (%d of 128 words wrong)\n", bad ? "mismatch" : "ok", bad);
  }
  return 0;
}
