/* rusticl (Mesa 22.3.6, llvmpipe): CL_KERNEL_LOCAL_MEM_SIZE is twice the __local bytes a kernel declares,
 * and the kernel runs correctly within the real figure (a 24 KiB array, reported as 48 KiB, on a device of
 * 32 KiB). PoCL reports the declared size. src/opencl/cl_context.c (fa_cl_fit_kernel) halves the figure on
 * rusticl's llvmpipe device.
 * Build: cc rusticl_local_mem.c -lOpenCL; run: OCL_ICD_VENDORS=<folder with rusticl.icd> RUSTICL_ENABLE=llvmpipe ./a.out */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>

static const char *src =
    "__kernel void k(__global float *out) {\n"
    "  __local float a[N];\n"
    "  for (int i = get_local_id(0); i < N; i += get_local_size(0)) a[i] = 1.0f;\n"
    "  barrier(CLK_LOCAL_MEM_FENCE);\n"
    "  float s = 0.0f;\n"
    "  for (int i = 0; i < N; i++) s += a[i];\n"
    "  out[get_global_id(0)] = s;\n"
    "}\n";

int main(void) {
  cl_platform_id plat;
  cl_device_id dev;
  cl_int err;
  clGetPlatformIDs(1, &plat, NULL);
  clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL);
  cl_ulong device_local;
  clGetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof device_local, &device_local, NULL);
  cl_context ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  cl_command_queue q = clCreateCommandQueue(ctx, dev, 0, &err);
  printf("CL_DEVICE_LOCAL_MEM_SIZE %llu\n", (unsigned long long)device_local);
  static const int sizes[] = {1024, 4096, 6144};
  for (int t = 0; t < 3; t++) {
    cl_program p = clCreateProgramWithSource(ctx, 1, &src, NULL, &err);
    char opt[32];
    snprintf(opt, sizeof opt, "-DN=%d", sizes[t]);
    clBuildProgram(p, 1, &dev, opt, NULL, NULL);
    cl_kernel k = clCreateKernel(p, "k", &err);
    cl_ulong used = 0;
    clGetKernelWorkGroupInfo(k, dev, CL_KERNEL_LOCAL_MEM_SIZE, sizeof used, &used, NULL);
    cl_mem out = clCreateBuffer(ctx, CL_MEM_READ_WRITE, 32 * sizeof(float), NULL, &err);
    clSetKernelArg(k, 0, sizeof out, &out);
    size_t g = 32, l = 32;
    err = clEnqueueNDRangeKernel(q, k, 1, NULL, &g, &l, 0, NULL, NULL);
    float h = 0.0f;
    clEnqueueReadBuffer(q, out, CL_TRUE, 0, sizeof h, &h, 0, NULL, NULL);
    printf("__local float[%d] (%zu bytes): CL_KERNEL_LOCAL_MEM_SIZE %llu, launch %d, sum %.0f (want %d)\n", sizes[t],
           sizes[t] * sizeof(float), (unsigned long long)used, err, h, sizes[t]);
  }
  return 0;
}
