#include <criterion/criterion.h>
Test(datasets, placeholder)
{
}
