/* llvmpipe (Mesa 22.3.6, through rusticl): one kernel invocation runs at most 65535 loop iterations in all,
 * counted over every loop of the kernel together; past that, each loop exits at its next test. A loop of
 * 65536 runs 65535 times, and a second loop after a first one of 40000 runs 25534 times. (Mesa's gallivm
 * keeps one loop limiter per function, set to LP_MAX_TGSI_LOOP_ITERATIONS = 65535, a guard meant for
 * graphics shaders.) PoCL runs every iteration.
 * Build: cc llvmpipe_loop_limit.c -lOpenCL; run: OCL_ICD_VENDORS=<folder with rusticl.icd> RUSTICL_ENABLE=llvmpipe ./a.out */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>

static const char *src =
    "__kernel void one(__global int *out, int n) {\n"
    "  int c = 0;\n"
    "  for (int i = 0; i < n; i++) c++;\n"
    "  out[0] = c;\n"
    "}\n"
    "__kernel void two(__global int *out, int n) {\n"
    "  int a = 0, b = 0;\n"
    "  for (int i = 0; i < n; i++) a++;\n"
    "  for (int i = 0; i < n; i++) b++;\n"
    "  out[0] = a; out[1] = b;\n"
    "}\n";

static void run(cl_command_queue q, cl_kernel k, cl_mem out, int n, int got[2]) {
  clSetKernelArg(k, 0, sizeof out, &out);
  clSetKernelArg(k, 1, sizeof n, &n);
  size_t g = 1;
  clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &g, 0, NULL, NULL);
  clEnqueueReadBuffer(q, out, CL_TRUE, 0, 2 * sizeof(int), got, 0, NULL, NULL);
}

int main(void) {
  cl_platform_id plat;
  cl_device_id dev;
  cl_int err;
  clGetPlatformIDs(1, &plat, NULL);
  clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL);
  cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &err);
  cl_program p = clCreateProgramWithSource(ctx, 1, &src, NULL, &err);
  clBuildProgram(p, 1, &dev, "", NULL, NULL);
  cl_mem out = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 2 * sizeof(int), NULL, &err);
  cl_kernel one = clCreateKernel(p, "one", &err), two = clCreateKernel(p, "two", &err);
  static const int ns[] = {65535, 65536, 200000};
  for (int t = 0; t < 3; t++) {
    int got[2] = {-1, -1};
    run(q, one, out, ns[t], got);
    printf("one loop of %d: ran %d\n", ns[t], got[0]);
  }
  int got[2] = {-1, -1};
  run(q, two, out, 40000, got);
  printf("two loops of 40000: ran %d and %d\n", got[0], got[1]);
  return 0;
}
